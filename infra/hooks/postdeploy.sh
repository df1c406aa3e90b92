#!/bin/sh
# azd postdeploy hook: subscribe the app's aml_job_events function to the Azure ML workspace's
# Event Grid system topic (created by infra/main.bicep). It runs after the code is deployed
# because Event Grid validates a webhook when the subscription is created, and the Event Grid
# extension's system key exists only once the function host has loaded the function (the
# official Event Grid quickstart, Azure-Samples/functions-quickstart-python-azd-eventgrid-blob,
# scripts/post-up.sh, does the same). Re-running it updates the subscription in place.
set -eu

for tool in az azd; do
  command -v "$tool" >/dev/null 2>&1 || { echo "postdeploy: $tool is not installed (see docs/azure-setup.md)" >&2; exit 1; }
done

# azd passes the environment's values to hooks as variables; read them again in case the hook
# is run by hand.
value() { eval "v=\${$1:-}"; [ -n "$v" ] && { printf '%s' "$v"; return; }; azd env get-value "$1" 2>/dev/null || true; }
APP=$(value AZURE_FUNCTION_APP_NAME)
RG=$(value RESOURCE_GROUP)
TOPIC=$(value AML_SYSTEM_TOPIC_NAME)
TOPIC_RG=$(value AML_RESOURCE_GROUP)

if [ -z "$TOPIC" ]; then
  echo "postdeploy: no Azure ML workspace configured (AZUREML_WORKSPACE), so no Event Grid subscription."
  exit 0
fi

# The key appears once the host has started with the function; on a fresh Flex Consumption app
# that can take a few minutes.
KEY=""
tries=0
while [ -z "$KEY" ] && [ "$tries" -lt 30 ]; do
  KEY=$(az functionapp keys list -g "$RG" -n "$APP" --query systemKeys.eventgrid_extension -o tsv 2>/dev/null || true)
  [ -n "$KEY" ] || { tries=$((tries + 1)); sleep 10; }
done
if [ -z "$KEY" ]; then
  echo "postdeploy: the app $APP has no eventgrid_extension system key yet; run this hook again later: azd hooks run postdeploy" >&2
  exit 1
fi

ENDPOINT="https://$APP.azurewebsites.net/runtime/webhooks/eventgrid?functionName=aml_job_events&code=$KEY"
# Only this app's jobs (every one carries the waa_evaluation tag), not the workspace's other runs.
az eventgrid system-topic event-subscription create \
  --name waa-aml-job-events \
  --resource-group "$TOPIC_RG" \
  --system-topic-name "$TOPIC" \
  --endpoint-type webhook \
  --endpoint "$ENDPOINT" \
  --included-event-types Microsoft.MachineLearningServices.RunStatusChanged Microsoft.MachineLearningServices.RunCompleted \
  --advanced-filter data.runTags.waa_evaluation IsNotNull \
  --output none
echo "postdeploy: Event Grid subscription waa-aml-job-events on $TOPIC delivers to $APP/aml_job_events."
