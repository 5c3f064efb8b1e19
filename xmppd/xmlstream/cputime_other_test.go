//go:build !linux

package xmlstream

func processCPU() int64 { return 0 }
