"""The wattserve dashboards, one module each (built with grafanalib): *now* (the run in progress),
*compare* (energy and time per completed run, configuration by configuration), *sensors* (up/down,
measured or estimated, scrape errors, dropped samples). grafana/build_dashboards.py writes them."""

from . import compare, now, sensors

BOARDS = (now, compare, sensors)
