#!/bin/bash
# usage: run.sh NAME PAGE_LIMIT ERP_FLAGS...
set -u
name=$1; limit=$2; shift 2
B="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin"
d=${OUT:-/tmp/issue22}/$name; rm -rf $d; mkdir -p $d; cd "$(dirname "$0")/.."
EP=$($B/python -c 'from velocity_platform.simulators.serve import free_port; print(free_port())')
WP=$($B/python -c 'from velocity_platform.simulators.serve import free_port; print(free_port())')
$B/velocity-platform simulate erp --port $EP --seed 7 --days 30 "$@" > $d/erp.log 2>&1 & e=$!
$B/velocity-platform simulate wms --port $WP --seed 7 --days 30 ${WMS_FLAGS:-} > $d/wms.log 2>&1 & w=$!
for i in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:$EP/healthz && curl -s -o /dev/null http://127.0.0.1:$WP/healthz && break; sleep 0.5; done
VELOCITY_ERP_TOKEN=erp-dev-token VELOCITY_WMS_TOKEN=wms-dev-token VELOCITY_STATE_DIR=$d/state VELOCITY_HTTP_PAGE_LIMIT=$limit VELOCITY_ERP_URL=http://127.0.0.1:$EP VELOCITY_WMS_URL=http://127.0.0.1:$WP \
  /usr/bin/time -v $B/velocity-platform run --from 2026-12-02 --to 2026-12-05 --summary $d/summary.json > $d/out.txt 2> $d/err.txt
curl -s -H "Authorization: Bearer erp-dev-token" http://127.0.0.1:$EP/v1/stats > $d/erp_stats.json
curl -s -H "Authorization: Bearer wms-dev-token" http://127.0.0.1:$WP/v1/stats > $d/wms_stats.json
kill $e $w
