// Package deploy holds what runs porttrace on every node: the Kubernetes
// manifests under kubernetes/, the systemd units under systemd/, and the
// tests that check them against the image `make image` builds. It has no
// code of its own.
package deploy
