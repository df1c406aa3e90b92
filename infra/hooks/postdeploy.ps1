# azd postdeploy hook (Windows): the same as postdeploy.sh. Subscribes the app's aml_job_events
# function to the Azure ML workspace's Event Grid system topic, after deploy, when the Event Grid
# extension's system key exists and the webhook answers Event Grid's validation.
$ErrorActionPreference = 'Stop'

foreach ($tool in @('az', 'azd')) {
  if (-not (Get-Command $tool -ErrorAction SilentlyContinue)) {
    Write-Error "postdeploy: $tool is not installed (see docs/azure-setup.md)"
    exit 1
  }
}

function Get-AzdValue([string] $name) {
  $v = [Environment]::GetEnvironmentVariable($name)
  if ($v) { return $v }
  $v = (& azd env get-value $name 2>$null)
  if ($LASTEXITCODE -eq 0) { return $v } else { return '' }
}
$app = Get-AzdValue 'AZURE_FUNCTION_APP_NAME'
$rg = Get-AzdValue 'RESOURCE_GROUP'
$topic = Get-AzdValue 'AML_SYSTEM_TOPIC_NAME'
$topicRg = Get-AzdValue 'AML_RESOURCE_GROUP'

if (-not $topic) {
  Write-Host 'postdeploy: no Azure ML workspace configured (AZUREML_WORKSPACE), so no Event Grid subscription.'
  exit 0
}

$key = ''
for ($i = 0; $i -lt 30 -and -not $key; $i++) {
  $key = (& az functionapp keys list -g $rg -n $app --query systemKeys.eventgrid_extension -o tsv 2>$null)
  if (-not $key) { Start-Sleep -Seconds 10 }
}
if (-not $key) {
  Write-Error "postdeploy: the app $app has no eventgrid_extension system key yet; run this hook again later: azd hooks run postdeploy"
  exit 1
}

# az is az.cmd on Windows, where cmd.exe would split the URL at '&': quote it inside the value,
# as the official quickstart's post-up.ps1 does.
$endpoint = '"' + "https://$app.azurewebsites.net/runtime/webhooks/eventgrid?functionName=aml_job_events&code=$key" + '"'
& az eventgrid system-topic event-subscription create `
  --name waa-aml-job-events `
  --resource-group $topicRg `
  --system-topic-name $topic `
  --endpoint-type webhook `
  --endpoint $endpoint `
  --included-event-types Microsoft.MachineLearningServices.RunStatusChanged Microsoft.MachineLearningServices.RunCompleted `
  --advanced-filter data.runTags.waa_evaluation IsNotNull `
  --output none
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Host "postdeploy: Event Grid subscription waa-aml-job-events on $topic delivers to $app/aml_job_events."
