package netcfg

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Firewall reconciles the node's inbound policy in its own chains (ChainInput,
// ChainRate) with go-iptables, for IPv4 and, where ip6tables works, IPv6. Apply is
// idempotent: when the chains already hold the spec it changes nothing; rules and
// chains that are not ours are never touched.
type Firewall struct {
	ipts map[int]*iptables.IPTables
	log  *slog.Logger
}

// NewFirewall finds iptables (required) and ip6tables (optional).
func NewFirewall(log *slog.Logger) (*Firewall, error) {
	if log == nil {
		log = slog.Default()
	}
	f := &Firewall{ipts: map[int]*iptables.IPTables{}, log: log.With("component", "firewall")}
	v4, err := iptables.NewWithProtocol(iptables.ProtocolIPv4)
	if err != nil {
		return nil, fmt.Errorf("firewall: iptables: %w", err)
	}
	f.ipts[4] = v4
	if v6, err := iptables.NewWithProtocol(iptables.ProtocolIPv6); err == nil {
		if _, err := v6.ListChains("filter"); err == nil {
			f.ipts[6] = v6
		}
	}
	return f, nil
}

// Apply makes the chains hold spec and INPUT jump to ChainInput first. It reports
// whether anything changed.
func (f *Firewall) Apply(spec FirewallSpec) (changed bool, err error) {
	var errs []error
	for _, fam := range []int{4, 6} {
		ipt := f.ipts[fam]
		if ipt == nil {
			continue
		}
		c, err := f.apply(ipt, fam, spec)
		changed = changed || c
		if err != nil {
			errs = append(errs, fmt.Errorf("firewall (IPv%d): %w", fam, err))
		}
	}
	return changed, errors.Join(errs...)
}

// current reports whether the chains of one family already hold want.
func current(ipt *iptables.IPTables, want map[string][][]string, hash string) (bool, error) {
	for _, chain := range []string{ChainInput, ChainRate} {
		ok, err := ipt.ChainExists("filter", chain)
		if err != nil {
			return false, err
		}
		rules, wanted := want[chain]
		if !ok {
			if wanted {
				return false, nil
			}
			continue
		}
		if !wanted {
			return false, nil // a rate chain no longer wanted
		}
		lines, err := ipt.List("filter", chain)
		if err != nil {
			return false, err
		}
		if len(lines) != len(rules)+1 { // the first line is -N CHAIN
			return false, nil
		}
		if chain == ChainInput && !strings.Contains(lines[1], "xedge "+hash) {
			return false, nil
		}
	}
	return ipt.Exists("filter", "INPUT", "-j", ChainInput)
}

func (f *Firewall) apply(ipt *iptables.IPTables, fam int, spec FirewallSpec) (bool, error) {
	want := spec.rules(fam)
	ok, err := current(ipt, want, spec.hash(fam))
	if err != nil {
		return false, err
	}
	if ok {
		return false, nil
	}
	// The rate chain first: the input chain jumps to it. Clearing it for a moment
	// fails closed (new connections fall through to the final DROP).
	if rules, wanted := want[ChainRate]; wanted {
		if err := fillChain(ipt, ChainRate, rules); err != nil {
			return true, err
		}
	}
	// The input chain is built aside and swapped in, so INPUT never jumps to a
	// half-filled chain: new chain, jump to it, drop the old jump and chain, rename.
	staging := ChainInput + "-NEW"
	if err := fillChain(ipt, staging, want[ChainInput]); err != nil {
		return true, err
	}
	if err := ipt.Insert("filter", "INPUT", 1, "-j", staging); err != nil {
		return true, fmt.Errorf("jump to %s: %w", staging, err)
	}
	if exists, _ := ipt.ChainExists("filter", ChainInput); exists {
		if err := ipt.DeleteIfExists("filter", "INPUT", "-j", ChainInput); err != nil {
			return true, fmt.Errorf("old jump: %w", err)
		}
		if err := ipt.ClearAndDeleteChain("filter", ChainInput); err != nil {
			return true, fmt.Errorf("old %s: %w", ChainInput, err)
		}
	}
	if err := ipt.RenameChain("filter", staging, ChainInput); err != nil {
		return true, fmt.Errorf("rename %s: %w", staging, err)
	}
	if _, wanted := want[ChainRate]; !wanted {
		if exists, _ := ipt.ChainExists("filter", ChainRate); exists {
			if err := ipt.ClearAndDeleteChain("filter", ChainRate); err != nil {
				return true, fmt.Errorf("remove %s: %w", ChainRate, err)
			}
		}
	}
	f.log.Info("firewall applied", "family", fam, "open", spec.Open, "cluster", spec.Cluster,
		"cluster_subnets", spec.ClusterSubnets, "rate_per_source", spec.RatePerSource, "drop_other", spec.DropOther)
	return true, nil
}

// fillChain makes chain hold exactly rules (creating or clearing it).
func fillChain(ipt *iptables.IPTables, chain string, rules [][]string) error {
	exists, err := ipt.ChainExists("filter", chain)
	if err != nil {
		return err
	}
	if exists {
		err = ipt.ClearChain("filter", chain)
	} else {
		err = ipt.NewChain("filter", chain)
	}
	if err != nil {
		return fmt.Errorf("chain %s: %w", chain, err)
	}
	for _, r := range rules {
		if err := ipt.Append("filter", chain, r...); err != nil {
			return fmt.Errorf("%s %s: %w", chain, strings.Join(r, " "), err)
		}
	}
	return nil
}

// Remove deletes the jump from INPUT and our chains (nothing else).
func (f *Firewall) Remove() error {
	var errs []error
	for fam, ipt := range f.ipts {
		for _, chain := range []string{ChainInput, ChainInput + "-NEW"} {
			if ok, _ := ipt.ChainExists("filter", chain); ok {
				if err := ipt.DeleteIfExists("filter", "INPUT", "-j", chain); err != nil {
					errs = append(errs, fmt.Errorf("firewall (IPv%d): %w", fam, err))
				}
			}
		}
		for _, chain := range []string{ChainInput, ChainInput + "-NEW", ChainRate} {
			if ok, _ := ipt.ChainExists("filter", chain); ok {
				if err := ipt.ClearAndDeleteChain("filter", chain); err != nil {
					errs = append(errs, fmt.Errorf("firewall (IPv%d) %s: %w", fam, chain, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
