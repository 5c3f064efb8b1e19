package lab

import "testing"

// TestBoxHasDHCP: the key presser stops once the boot server's `boxes` answer has
// a DHCP event for the box's MAC (any case), not for a box listed without one.
func TestBoxHasDHCP(t *testing.T) {
	boxes := "52:54:00:77:01:01 10.77.0.11 dhcp=01:47:09.629 script=01:47:09.676\n52:54:00:77:01:02  \n"
	if !boxHasDHCP(boxes, "52:54:00:77:01:01") {
		t.Fatal("box 1 asked for an address")
	}
	if !boxHasDHCP("52:54:00:77:01:0A 10.77.0.20 dhcp=01:47:09.629\n", "52:54:00:77:01:0a") {
		t.Fatal("MAC case must not matter")
	}
	if boxHasDHCP(boxes, "52:54:00:77:01:02") || boxHasDHCP(boxes, "52:54:00:77:01:03") || boxHasDHCP("", "52:54:00:77:01:01") {
		t.Fatal("boxes 2 and 3 did not")
	}
}
