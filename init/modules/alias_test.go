package modules

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const aliasFile = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias net-pf-7 bridge
alias acpi*:PNP0A03:* pci_root
alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
`

func TestMatch(t *testing.T) {
	as, err := ParseAliases(strings.NewReader(aliasFile))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00": {"virtio_pci"},
		"virtio:d00000001v00001AF4":                             {"virtio_net"},
		"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00": {"e1000"},
		"pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00": nil,
		"pci:v00001B36d0000000Dsv00000000sd00000000bc0Csc03i30": {"xhci_pci"},
	}
	for alias, want := range cases {
		if got := as.Match(alias); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %v want %v", alias, got, want)
		}
	}
	if got := as.Resolve("net-pf-7"); !reflect.DeepEqual(got, []string{"bridge"}) {
		t.Errorf("resolve alias: %v", got)
	}
	if got := as.Resolve("8021q"); !reflect.DeepEqual(got, []string{"8021q"}) {
		t.Errorf("resolve name: %v", got)
	}
}

func TestDeviceAliasesAndNeeded(t *testing.T) {
	root := t.TempDir()
	devs := map[string]string{
		"bus/pci/devices/0000:00:02.0/modalias": "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\n",
		"bus/pci/devices/0000:00:03.0/modalias": "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00\n",
		"bus/pci/devices/0000:00:00.0/modalias": "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00\n",
		"bus/virtio/devices/virtio0/modalias":   "virtio:d00000001v00001AF4\n",
		"bus/usb/devices/1-0:1.0/modalias":      "usb:whatever\n",
	}
	for p, c := range devs {
		f := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := DeviceAliases(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("aliases %v", got)
	}
	as, _ := ParseAliases(strings.NewReader(aliasFile))
	if need := as.Needed(got); !reflect.DeepEqual(need, []string{"e1000", "virtio_net", "virtio_pci"}) {
		t.Fatalf("needed %v", need)
	}
}

func TestIndexMatchesLikeAliases(t *testing.T) {
	as, _ := ParseAliases(strings.NewReader(aliasFile))
	ix := as.Index()
	for _, d := range []string{
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"virtio:d00000001v00001AF4",
		"acpi:PNP0A03:",
		"pci:v00001B36d0000000Dsv00000000sd00000000bc0Csc03i30",
		"usb:v1D6Bp0002",
		"net-pf-7",
	} {
		if got, want := ix.Match(d), as.Match(d); !reflect.DeepEqual(got, want) && !(d == "net-pf-7" && got == nil) {
			t.Errorf("%s: index %v, linear %v", d, got, want)
		}
	}
	if got := ix.Match("acpi:PNP0A03:"); !reflect.DeepEqual(got, []string{"pci_root"}) {
		t.Errorf("wildcard bus: %v", got)
	}
}
