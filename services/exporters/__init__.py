"""Sensor exporters (one module each: rapl, energibridge, nvml, netio, host, estimate), their shared
pieces (common), and the sampler that scrapes them into a run folder. See README.md in this folder for
the metric contract."""
