package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/wneessen/go-mail"
)

// mail sends nt by SMTP through wneessen/go-mail: implicit TLS on port 465
// (or EDGECERT_SMTP_TLS=implicit), otherwise STARTTLS: required when a
// password would cross, used when offered otherwise (EDGECERT_SMTP_TLS
// says otherwise); AUTH when a user is set; Date and Message-ID headers. The dial and the whole dialogue have deadlines: a
// server that never greets fails this notice, and only this one.
func (n *notifier) mail(ctx context.Context, nt Notice) error {
	host, portStr, err := net.SplitHostPort(n.cfg.SMTPAddr)
	if err != nil {
		return fmt.Errorf("EDGECERT_SMTP_ADDR: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("EDGECERT_SMTP_ADDR: port %q: %w", portStr, err)
	}
	opts := []mail.Option{mail.WithPort(port), mail.WithTimeout(n.smtpTimeout),
		mail.WithTLSConfig(&tls.Config{ServerName: host, MinVersion: tls.VersionTLS12})}
	switch smtpTLS(n.cfg.SMTPTLS, port, n.cfg.SMTPUser != "") {
	case "implicit":
		opts = append(opts, mail.WithSSL())
	case "starttls":
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	case "opportunistic":
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	case "none":
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if n.cfg.SMTPUser != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(n.cfg.SMTPUser), mail.WithPassword(n.cfg.SMTPPass))
	}
	client, err := mail.NewClient(host, opts...)
	if err != nil {
		return fmt.Errorf("SMTP: %w", err)
	}
	m := mail.NewMsg()
	if err := m.From(n.cfg.SMTPFrom); err != nil {
		return fmt.Errorf("EDGECERT_SMTP_FROM: %w", err)
	}
	if err := m.To(n.cfg.SMTPTo...); err != nil {
		return fmt.Errorf("EDGECERT_SMTP_TO: %w", err)
	}
	m.Subject(fmt.Sprintf("[edgecert] %s: %s", nt.Event, nt.Cert))
	m.SetDateWithValue(nt.At)
	m.SetMessageID()
	m.SetBodyString(mail.TypeTextPlain, nt.Text)
	ctx, cancel := context.WithTimeout(ctx, n.smtpTimeout)
	defer cancel()
	if err := client.DialAndSendWithContext(ctx, m); err != nil {
		return fmt.Errorf("SMTP %s: %w", n.cfg.SMTPAddr, err)
	}
	return nil
}

// smtpTLS is the TLS policy for port: "auto" is implicit TLS on 465, and
// elsewhere STARTTLS, required when credentials would cross (auth), used
// if offered otherwise.
func smtpTLS(policy string, port int, auth bool) string {
	switch p := strings.ToLower(policy); {
	case p != "" && p != "auto":
		return p
	case port == 465:
		return "implicit"
	case auth:
		return "starttls"
	}
	return "opportunistic"
}
