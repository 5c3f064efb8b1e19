//go:build !(linux && (amd64 || arm64))

package aiosync

const asyncExpected = false
