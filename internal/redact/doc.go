// Package redact owns the one way edged keeps secrets out of logs, status, metrics and error
// strings: URL userinfo passwords and secret-looking query parameters are masked, header values
// are hidden, and a Scrubber removes known secret strings from free text (an error message, a
// log attribute), because errors of the standard library embed whole URLs (url.Error) that
// nothing upstream can mask structurally.
//
// It is a leaf package: it imports nothing of edged.
package redact
