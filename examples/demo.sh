#!/bin/sh
# The demo: the main job on the bundled demo model. Usage: demo.sh MONOQUANT MODEL
set -e
mq=$1; model=$2
echo "== monoquant info $model"
"$mq" info "$model"
