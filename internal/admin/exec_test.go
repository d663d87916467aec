package admin_test

import (
	"errors"
	"os/exec"
)

func execLookPath(name string) (string, error) { return exec.LookPath(name) }

// execEdged runs the edged binary and returns its combined output.
func execEdged(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
