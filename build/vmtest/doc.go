// Package vmtest holds the VM tests of the appliance image (build tag vmtest): they
// build the image once, boot it in qemu under TCG and drive it through its serial
// console and forwarded ports. See docs/image.md.
package vmtest
