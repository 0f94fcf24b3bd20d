package e2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// TestStatusPageInABrowser opens the status page in a real browser
// (Debian's headless Chromium, driven through chromedp) against the real
// product on the real engine, with Pebble and nginx: the certificates the
// test issued are listed with their expiry; a forced renewal through docker
// exec shows up on the open page (new serial, new proof, a history row)
// without a reload; a hostile label value is shown as text and runs no
// script; with JavaScript off the table is there. A screenshot goes to the
// e2e logs folder.
func TestStatusPageInABrowser(t *testing.T) {
	t.Parallel()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed (e2e/setup.sh installs it)")
	}
	s := newStack(t, "page")
	shop, blog := s.domain("shop"), s.domain("blog")
	s.point(shop, blog)
	s.startNginx()
	s.startEdgecert("EDGECERT_STATUS_ADDR=:8080")
	roots := caRoots(t, s.pebble)
	for name, d := range map[string]string{"shop": shop, "blog": blog} {
		s.writeConf("10-"+name+".conf", tlsServer(name, d))
		s.startApp(name, map[string]string{"domains": d, "name": name})
		s.waitServed(roots, d, 150*time.Second)
	}
	s.waitDeployed("shop", "blog")
	const evil = `<img src=x onerror=window.pwned=1>`
	s.startApp("evil", map[string]string{"domains": s.domain("evil"), "name": evil})

	ip, err := docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", s.edgecert)
	if err != nil {
		t.Fatalf("edgecert's address: %s", ip)
	}
	base := "http://" + strings.Fields(ip)[0] + ":8080/"

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.WindowSize(1400, 900))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first run starts the browser, which lives as long as the context
	// it ran on: this one, not a step's.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	// do runs steps with a deadline of its own.
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(browser, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(browser, 30*time.Second)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}

	// The overview lists both certificates with their expiry, and the
	// label problem as text.
	do("open the overview", chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS(`tr[data-cert="shop"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-cert="blog"]`)))
	for _, name := range []string{"shop", "blog"} {
		c, _ := s.cert(name)
		row := eval(`document.querySelector('tr[data-cert="` + name + `"]').innerText`)
		if want := c.NotAfter.UTC().Format("2006-01-02 15:04:05 UTC"); !strings.Contains(row, want) || !strings.Contains(row, "valid") {
			t.Errorf("%s's row %q; want its state and expiry %s", name, row, want)
		}
	}
	problems := eval(`document.getElementById('problems').parentElement.innerText`)
	if !strings.Contains(problems, evil) {
		t.Errorf("the problems section %q does not show the hostile label's value as text", problems)
	}
	if got := eval(`String(typeof window.pwned) + " " + document.querySelectorAll('main img').length`); got != "undefined 0" {
		t.Errorf("after a label value %s: window.pwned and images in the page: %s; want undefined 0", evil, got)
	}
	shoot(t, browser, "status-page.png")

	// A forced renewal shows up on shop's open page without a reload.
	before, _ := s.cert("shop")
	do("open shop's page", chromedp.Navigate(base+"cert/shop"), chromedp.WaitVisible(chromedp.CSS(`#live:not([hidden])`)))
	eval(`window.notReloaded = "yes"`)
	if out, code := s.renew("--force", "shop"); code != 0 {
		t.Fatalf("renew --force shop: exit %d: %s", code, out)
	}
	after, _ := s.cert("shop")
	if after.Serial == before.Serial {
		t.Fatalf("shop's serial %s unchanged after renew --force", after.Serial)
	}
	proven := time.Now()
	var shown string
	if err := waitUntil(30*time.Second, func() error {
		shown = eval(`document.getElementById('main').innerText`)
		if strings.Count(shown, after.Serial) < 3 { // the serial, a proof, a history row
			return fmt.Errorf("the open page does not show %s three times yet", after.Serial)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, shown)
	}
	t.Logf("MEASURE status page: renewal shown %s after renew --force returned", time.Since(proven).Round(time.Millisecond))
	if eval(`String(window.notReloaded)`) != "yes" {
		t.Error("the page was reloaded to show the renewal")
	}
	for _, want := range []string{"issued", "reload proven", "nginx"} {
		if !strings.Contains(shown, want) {
			t.Errorf("shop's page after the renewal has no %q:\n%s", want, shown)
		}
	}
	shoot(t, browser, "status-page-cert.png")

	// JavaScript off: a new tab without scripts has the whole table.
	noJS, cancelNoJS := chromedp.NewContext(browser)
	defer cancelNoJS()
	njctx, cancelNJ := context.WithTimeout(noJS, 60*time.Second)
	defer cancelNJ()
	if _, err := chromedp.Call(njctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatalf("disable scripts: %v", err)
	}
	if err := chromedp.Do(njctx, chromedp.Navigate(base), chromedp.WaitReady(chromedp.CSS(`table.certs`))); err != nil {
		t.Fatalf("the overview without JavaScript: %v", err)
	}
	text, err := chromedp.Run(njctx, chromedp.Text(chromedp.CSS(`table.certs`)))
	if err != nil || !strings.Contains(text, "shop") || !strings.Contains(text, "blog") {
		t.Errorf("without JavaScript the table reads %q (%v); want shop and blog", text, err)
	}
}

// shoot writes a PNG of the whole page to the e2e logs folder.
func shoot(t *testing.T, browser context.Context, name string) {
	t.Helper()
	dir := cmp.Or(os.Getenv("EDGECERT_E2E_LOGS"), filepath.Join("..", "build", "e2e-logs"))
	ctx, cancel := context.WithTimeout(browser, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
