package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"strings"
	"time"
)

// mail sends nt by SMTP: STARTTLS when the server offers it, AUTH PLAIN
// when a user is set (net/smtp refuses it without TLS except to localhost).
// The dial and the whole dialogue have deadlines: a server that never
// greets fails this notice, and only this one.
func (n *notifier) mail(ctx context.Context, nt Notice) error {
	host, _, err := net.SplitHostPort(n.cfg.SMTPAddr)
	if err != nil {
		return fmt.Errorf("EDGECERT_SMTP_ADDR: %w", err)
	}
	d := net.Dialer{Timeout: n.smtpDial}
	conn, err := d.DialContext(ctx, "tcp", n.cfg.SMTPAddr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(n.smtpTimeout)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("SMTP greeting: %w", err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}); err != nil {
			return fmt.Errorf("SMTP STARTTLS: %w", err)
		}
	}
	if n.cfg.SMTPUser != "" {
		if err := c.Auth(smtp.PlainAuth("", n.cfg.SMTPUser, n.cfg.SMTPPass, host)); err != nil {
			return fmt.Errorf("SMTP AUTH: %w", err)
		}
	}
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nDate: %s\r\nSubject: [edgecert] %s: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		n.cfg.SMTPFrom, strings.Join(n.cfg.SMTPTo, ", "), nt.At.Format(time.RFC1123Z), nt.Event, nt.Cert, nt.Text)
	if err := c.Mail(n.cfg.SMTPFrom); err != nil {
		return fmt.Errorf("SMTP MAIL: %w", err)
	}
	for _, to := range n.cfg.SMTPTo {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("SMTP RCPT %s: %w", to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("SMTP DATA: %w", err)
	}
	return c.Quit()
}
