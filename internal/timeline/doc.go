// Package timeline turns one measured run of the bench — the requests a
// client saw, the upgrades the harness made and the CPU and memory of each
// server generation — into what an operator wants to know about an
// upgrade: throughput and latency over time in short buckets (Buckets; the
// last one's rate over the part of a bucket the run covers), the p99 near
// upgrades against the steady p99 (NearSteady), the near requests split by
// whether they had to reconnect (NearSplit), what the old and new
// generation cost while both were alive (Overlaps), and a picture of it
// all (WriteSVG).
//
// A Sampler records the CPU and memory. On Linux it reads /proc, and CPU
// time to the nanosecond from the process's CPU-time clock or, where that
// cannot be read, from each thread's schedstat, kept right across threads
// that exit (see cpuCount); elsewhere it records nothing.
//
// It has no dependency outside the standard library, so the picture is
// plain SVG drawn here rather than by a plotting library.
package timeline
