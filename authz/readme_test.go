package authz

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeListsEveryReason keeps the README's reason table in step with
// the code: users and alert rules depend on those codes.
func TestReadmeListsEveryReason(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Reasons() {
		row := "| `" + r.Code + "` | "
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no reason table row for %q", r.Code)
		}
	}
}
