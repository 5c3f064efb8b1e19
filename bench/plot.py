#!/usr/bin/python3
"""Draws bench/results/<run>.json as a PNG: one panel per figure, one bar per
server, xmppd's ratio to each peer in the panel title. Usage: plot.py RUN.json OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"xmppd": "#2a7ab0", "ejabberd": "#c0504d", "prosody": "#9bbb59"}


def main():
    run = json.load(open(sys.argv[1]))
    figs = [f for f in FIGURES if any(f[0] in s["figures"] for s in run["servers"])]
    if not figs:
        print("no figures to plot", file=sys.stderr)
        sys.exit(1)
    cols = 3
    rows = (len(figs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (key, label, unit, higher) in zip(axes.flat, figs):
        names = [s["name"] for s in run["servers"] if key in s["figures"]]
        vals = [s["figures"][key] for s in run["servers"] if key in s["figures"]]
        ax.bar(names, vals, color=[COLORS.get(n, "#888888") for n in names])
        ratios = []
        for peer in ("ejabberd", "prosody"):
            r = run.get("ratios", {}).get("xmppd/" + peer, {}).get(key)
            if r is not None:
                ratios.append("%.2fx %s" % (r, peer[:3]))
        title = label + ("\n" + ", ".join(ratios) if ratios else "")
        ax.set_title(title + ("  (higher is better)" if higher else "  (lower is better)"), fontsize=8)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(labelsize=8)
        for i, v in enumerate(vals):
            ax.annotate("%.3g" % v, (i, v), ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[len(figs):]:
        ax.axis("off")
    mode = "quick" if run.get("quick") else "full"
    fig.suptitle("xedge bench %s (%s mode, quiet machine: %s)" % (run["started"][:16], mode, run.get("quiet_machine")), fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


FIGURES = [
    ("mem_kb_session_plain", "RSS/idle session, no TLS", "KB", False),
    ("mem_kb_session_tls", "RSS/idle session, STARTTLS", "KB", False),
    ("logins_per_s", "logins/s", "per second", True),
    ("msgs_per_s", "messages/s, window 10", "per second", True),
    ("p50_ms", "latency p50, window 1", "ms", False),
    ("p99_ms", "latency p99, window 1", "ms", False),
    ("fanout_s", "presence fan-out time", "s", False),
    ("fanout_per_s", "fan-out deliveries/s", "per second", True),
    ("muc_per_s", "MUC fan-out deliveries/s (200 occupants)", "per second", True),
    ("muc_p99_ms", "MUC fan-out latency p99", "ms", False),
    ("mam_p50_ms", "MAM last page of 50 (100k), p50", "ms", False),
    ("mam_p99_ms", "MAM last page of 50 (100k), p99", "ms", False),
    ("mam_with_p50_ms", "MAM page with with=, p50", "ms", False),
    ("mam_with_p99_ms", "MAM page with with=, p99", "ms", False),
    ("tsung_req_ms", "tsung mean request time", "ms", False),
]

if __name__ == "__main__":
    main()
