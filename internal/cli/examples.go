package cli

// Each command's Examples, from the incidents porttrace is run in (the
// README tells them at length).

const streamExamples = `  # Who binds port 10101, and who is refused it, as it happens
  sudo porttrace -p 10101

  # Only what failed: binds denied below ip_unprivileged_port_start,
  # addresses in use (with what holds them), refused connects
  sudo porttrace --failed

  # JSON lines for jq or a log pipeline; stop after a minute
  sudo porttrace -o json -d 1m | jq 'select(.result != "ok")'

  # The connects of one container, with how each handshake ended
  sudo porttrace -e connect --container redis

  # A storm too fast to print: one event in 100, the others counted
  sudo porttrace --sample 100 -o json > storm.json`

const churnExamples = `  # Ephemeral ports allocated a second, per namespace and destination
  sudo porttrace churn

  # One container's churn, exported to Prometheus with its 20 busiest workloads
  sudo porttrace churn --container redis --metrics :9470 --metrics-workloads 20`

const portsExamples = `  # Listeners now, with their processes (like ss -ltnp, with containers)
  sudo porttrace ports

  # Every socket in every network namespace
  sudo porttrace ports -a --netns all

  # Then keep watching: new binds and listens, listeners that close
  sudo porttrace ports --watch -o json`

const whoExamples = `  # Who holds 8080 now (exit 1 if nobody does)
  sudo porttrace who 8080

  # In a pod's network namespace, UDP only
  sudo porttrace who 53/udp --netns /run/netns/cni-1234

  # Who binds 10101 next: wait up to five minutes
  sudo porttrace who 10101 --wait -d 5m`
