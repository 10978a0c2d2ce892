package fs

import "testing"

func TestSelinuxfsListed(t *testing.T) {
	for _, c := range []struct {
		name string
		text string
		want bool
	}{
		{"a kernel running SELinux lists selinuxfs as nodev", "nodev\tsysfs\nnodev\tselinuxfs\n\text4\n", true},
		{"a kernel without SELinux does not list it", "nodev\tsysfs\nnodev\tproc\n\text4\n", false},
		{"a name that only contains selinuxfs is another filesystem", "nodev\tselinuxfs2\nnodev\tmyselinuxfs\n", false},
		{"the last line may lack its newline", "\text4\nnodev\tselinuxfs", true},
		{"an empty list lists nothing", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := selinuxfsListed([]byte(c.text)); got != c.want {
				t.Errorf("selinuxfsListed(%q) = %v, want %v", c.text, got, c.want)
			}
		})
	}
}
