// Package vip decides which node holds which virtual IP: a pool of VIPs spread over
// the healthy in-service members of the cluster view with minimal movement, each VIP
// held by exactly one node of a view, with keepalived's vocabulary (priority,
// preempt / nopreempt / preempt delay, health tracks with weight/rise/fall, notify
// hooks) and SLB's in-service flag for spare nodes.
//
// Policy.Assign is a pure function of a View: every node that sees the same view
// computes the same plan and acts only on its own part (Agent). A partition that sees
// no more than half of the known members holds nothing (the minority withdraws).
//
// It decides and must not execute: the address, ARP and NA mechanics live in
// netcfg, which the caller drives from the Agent's actions. It must not import
// xmppd, storage or netcfg.
package vip
