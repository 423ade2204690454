//go:build tools

// Package tools pins the command that build.sh compiles from this module.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
