// Package timeline turns one measured run of the bench — the requests a
// client saw, the upgrades the harness made and the CPU and memory of each
// server generation — into what an operator wants to know about an
// upgrade: throughput and latency over time in short buckets, the p99 near
// upgrades against the steady p99, what the old and new generation cost
// while both were alive, and a picture of it all (WriteSVG).
//
// It has no dependency outside the standard library, so the picture is
// plain SVG drawn here rather than by a plotting library.
package timeline
