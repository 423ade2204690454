// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status),
// the library Flux waits on health with, computes for one Kubernetes object:
// the object as JSON on stdin, {"status": ..., "message": ...} on stdout.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	// Unstructured's own decoder keeps integers as int64, as a client reading
	// the object from the API server does.
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(input); err != nil {
		fail("parse the object: %v", err)
	}
	result, err := status.Compute(object)
	if err != nil {
		fail("compute status: %v", err)
	}
	out, err := json.Marshal(map[string]string{
		"status":  result.Status.String(),
		"message": result.Message,
	})
	if err != nil {
		fail("encode the result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
