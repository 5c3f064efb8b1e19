//go:build !linux

package workload

func runQueueWait(int) float64 { return 0 }

func cpuBusy(int) float64 { return -1 }

func coreSpeed(int) float64 { return -1 }
