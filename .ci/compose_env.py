"""Prints the `environment` of docker-compose.yml's callsign service as KEY=VALUE lines, with
the compose-network host names mapped to this machine, so CI can run the same binary with the
same configuration natively (no Docker engine here).

    python compose_env.py docker-compose.yml DATA_DIR DATABASE_URL
"""
import sys

import yaml

compose_file, data_dir, database_url = sys.argv[1:4]
with open(compose_file) as f:
    env = yaml.safe_load(f)["services"]["callsign"]["environment"]
# What only differs because the stack runs in containers: where PostgreSQL and the volume are.
env["CALLSIGN_DATABASE_URL"] = database_url
env["CALLSIGN_DATA_DIR"] = data_dir
for key, value in env.items():
    print(f"{key}={value}")
