// {{name}}: a wpod sidecar in Go. It tells the pod it is ready, then writes the time into
// /shared/now every second, for the main container to read: a starting point. wpod/wpod.go
// says what else of wpod a Go 1.23 sidecar can call.
package main

import (
	"fmt"
	"os"
	"time"

	"sidecar/wpod"
)

func main() {
	wpod.Ready()
	fmt.Println("{{name}}: ready")
	for i := 0; ; i++ {
		now := time.Now().UTC().Format(time.RFC3339)
		if err := os.WriteFile("/shared/now", []byte(now+"\n"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "{{name}}:", err)
			os.Exit(1)
		}
		if i == 0 {
			fmt.Println("{{name}}: wrote /shared/now")
		}
		time.Sleep(time.Second)
	}
}
