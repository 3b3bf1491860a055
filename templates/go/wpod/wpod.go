// Package wpod: what a Go 1.23 sidecar can call of wpod's interfaces (wit/sidecar.wit,
// wpod:sidecar@{{wit_version}}).
//
// Only ready(): every other wpod function returns a string or a list (events, container lists,
// errors, log lines), which the component model hands to a guest through the guest's exported
// cabi_realloc, and Go 1.23's wasip1 port cannot export functions (go:wasmexport came in Go
// 1.24). Everything WASI preview1 offers works as usual: files in the sidecar's volumes,
// stdout and stderr into the pod's logs, the environment, timers.
package wpod

//go:wasmimport wpod:sidecar/lifecycle@{{wit_version}} ready
func ready()

// Ready tells the pod this sidecar is ready: as a native sidecar (an init container with
// restartPolicy: Always) it counts as started then, and the containers after it may start.
func Ready() { ready() }
