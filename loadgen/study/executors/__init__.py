"""Where a study's runs execute: ``local`` (this machine, one run at a time) or ``slurm`` (a job per
cell attempt, exclusive nodes). The run folders stay the only record either way."""
