//go:build vmtest && scenarios

package vmtest

// With the scenarios tag, docs/scenarios.md names the tags a rerun needs.
func init() { runTags = "'vmtest scenarios'" }
