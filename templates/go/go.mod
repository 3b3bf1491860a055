module sidecar

go 1.23
