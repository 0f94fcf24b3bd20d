package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/signal"
)

type docSource StatusDoc

func (d docSource) status() StatusDoc { return StatusDoc(d) }

func TestMetricsGaugesAndCounters(t *testing.T) {
	m := newMetrics(docSource(sampleDoc()))
	m.CertEvent("site", acme.Event{Kind: acme.EventIssued, TookMS: 1500}, acme.CertStatus{})
	m.CertEvent("site", acme.Event{Kind: acme.EventOrderFailed}, acme.CertStatus{})
	m.CertEvent("site", acme.Event{Kind: acme.EventReloadProven}, acme.CertStatus{}) // not an order: not counted
	m.report(signal.Report{Container: "nginx", OK: true, Reloaded: true, Steps: []signal.Step{{Step: "config_test", TookMS: 120}}})
	m.report(signal.Report{Container: "nginx", OK: false, FailedStep: "workers_new"})

	srv := httptest.NewServer(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	out := string(body)
	for _, want := range []string{
		`edgecert_orders_total{result="issued"} 1`,
		`edgecert_orders_total{result="failed"} 1`,
		`edgecert_order_duration_seconds_sum 1.5`,
		`edgecert_reloads_total{container="nginx",result="proven"} 1`,
		`edgecert_reloads_total{container="nginx",result="failed"} 1`,
		`edgecert_reload_failures_total{step="workers_new"} 1`,
		`edgecert_reload_step_duration_seconds_count{step="config_test"} 1`,
		`edgecert_certificate_state{cert="site",state="valid"} 1`,
		`edgecert_certificate_state{cert="old",state="unused"} 1`,
		`edgecert_certificate_renew_at_timestamp_seconds{cert="site",source="ari"}`,
		`edgecert_certificate_not_after_timestamp_seconds{cert="site"}`,
		`edgecert_docker_connected 1`,
		`edgecert_label_problems 1`,
		`edgecert_build_info{goversion="go`,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
