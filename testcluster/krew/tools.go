//go:build tools

// Package tools pins the commands that build.sh compiles from this module:
// krew itself and the validator krew-index runs on every manifest.
package tools

import (
	_ "sigs.k8s.io/krew/cmd/krew"
	_ "sigs.k8s.io/krew/cmd/validate-krew-manifest"
)
