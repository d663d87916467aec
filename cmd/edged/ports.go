package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/edged-dev/edged/hardware"
)

// printPorts writes hardware.ListPorts as a table for `edged ports`.
func printPorts(w io.Writer, ports []hardware.PortInfo) error {
	if len(ports) == 0 {
		_, err := fmt.Fprintln(w, "no serial ports found (ptys are not listed)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tUSB\tVID\tPID\tSERIAL\tPRODUCT\tLINK")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, p := range ports {
		usb := "no"
		if p.IsUSB {
			usb = "yes"
		}
		link := "-"
		if len(p.Links) > 0 {
			link = strings.Join(p.Links, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, usb, dash(p.VID), dash(p.PID),
			dash(p.SerialNumber), dash(p.Product), link)
	}
	return tw.Flush()
}
