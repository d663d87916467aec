package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a broker under test: edged or mosquitto, on a loopback port.
type proc struct {
	name string
	addr string
	cmd  *exec.Cmd
	out  *bytes.Buffer
	dir  string
	done chan struct{}
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type lockedBuf struct {
	mu sync.Mutex
	bytes.Buffer
}

func start(name, dir string, argv []string, env []string) (*proc, error) {
	p := &proc{name: name, dir: dir, out: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	lb := &lockedBuf{}
	p.cmd.Stdout, p.cmd.Stderr = lb, lb
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = p.cmd.Wait()
		lb.mu.Lock()
		p.out.Write(lb.Bytes())
		lb.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func waitFor(total time.Duration, fn func() error) error {
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) waitTCP(addr string) error {
	return waitFor(20*time.Second, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, p.out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// mosquittoConf is what every mosquitto in the benchmark runs with, before the variant's lines.
func startMosquitto(bin, name, extra string, in ...*box) (*proc, error) {
	dir, err := os.MkdirTemp("", "edged-bench-mosq-")
	if err != nil {
		return nil, err
	}
	port := freePort()
	conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\n%s\n", port, strings.ReplaceAll(extra, "{dir}", dir))
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	p, err := start(name, dir, boxed(in, []string{bin, "-c", path}), nil)
	if err != nil {
		return nil, err
	}
	p.addr = fmt.Sprintf("127.0.0.1:%d", port)
	if err := p.waitTCP(p.addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// startEdged runs `edged run -c` on a config with {listen} {admin} {data_dir} placeholders.
func startEdged(bin, name, cfg string, in ...*box) (*proc, error) {
	dir, err := os.MkdirTemp("", "edged-bench-edged-")
	if err != nil {
		return nil, err
	}
	port, admin := freePort(), fmt.Sprintf("127.0.0.1:%d", freePort())
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg = strings.NewReplacer("{listen}", addr, "{admin}", admin, "{data_dir}", filepath.Join(dir, "data")).Replace(cfg)
	path := filepath.Join(dir, "edged.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := start(name, dir, boxed(in, []string{bin, "run", "-c", path}), nil)
	if err != nil {
		return nil, err
	}
	p.addr = addr
	hc := &http.Client{Timeout: time.Second}
	err = waitFor(30*time.Second, func() error {
		select {
		case <-p.done:
			return fmt.Errorf("edged exited: %s", p.out.String())
		default:
		}
		resp, err := hc.Get("http://" + admin + "/healthz")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %s", resp.Status)
		}
		return nil
	})
	if err == nil {
		err = p.waitTCP(addr)
	}
	if err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func (p *proc) cleanup() {
	p.stop()
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}

// mem is a /proc/PID/status sample in kB.
type mem struct{ HWM, RSS, Anon int }

func (p *proc) memory() mem {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return mem{}
	}
	defer f.Close()
	var m mem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.Atoi(fs[0])
		switch k {
		case "VmHWM":
			m.HWM = n
		case "VmRSS":
			m.RSS = n
		case "RssAnon":
			m.Anon = n
		}
	}
	return m
}

// sched is the scheduler's account of a process: CPU time and run-queue wait, in ns, summed
// over its threads (/proc/PID/task/*/schedstat). Threads that ended in between are lost, so
// it suits servers whose threads live as long as they do.
type sched struct {
	cpu, wait int64
	ok        bool
}

func (p *proc) schedstat() sched {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", p.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		return sched{}
	}
	s := sched{ok: true}
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return sched{}
		}
		c, err1 := strconv.ParseInt(f[0], 10, 64)
		w, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return sched{}
		}
		s.cpu += c
		s.wait += w
	}
	return s
}

// gate is "the uplink": closed (connection refused) until open, then a TCP relay to target.
type gate struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func openGate(addr, target string) (*gate, error) {
	var l net.Listener
	err := waitFor(5*time.Second, func() (err error) { l, err = net.Listen("tcp", addr); return err })
	if err != nil {
		return nil, err
	}
	g := &gate{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			g.mu.Lock()
			g.conns = append(g.conns, c, u)
			g.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	return g, nil
}

func (g *gate) close() {
	g.l.Close()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		c.Close()
	}
}
