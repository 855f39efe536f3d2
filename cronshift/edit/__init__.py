"""The only writer of crontabs and the commands built on it.

crontab.py: backup, lock, atomic write, verify, journal, undo. retire.py: comment a job out (or clear a
run-parts script's execute bits) once shadow-run proved parity. wrap.py: put `cronshift record` in front of a
job. Nothing below this layer writes a crontab.
"""
