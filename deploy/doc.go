// Package deploy holds what installs xdpsec as a service: the systemd
// unit xdpsec.service and, in README.md, why it grants the capabilities
// it grants. Its tests run the daemon's privileged operations with exactly
// the unit's capability set, and without each capability in turn.
package deploy
