"""The fleet coordinator (``feederd coordinate``): each feeder's flexibility in, one system target
split into per-feeder DR events out (DESIGN.md §8). It reads the feeders' contracts
(``controller.flex``, ``controller.dr.events``) and shares the controller's plumbing (config
fields, secrets, logs, sd_notify, the clock); it never runs a feeder's loop."""
