package legoissuer

import (
	"net/http"

	"golang.org/x/time/rate"
)

// The request budget: every request edgecert makes to the CA waits for a
// token, so fast polling of many orders at once stays well under Let's
// Encrypt's per-IP limits (250 requests/s on /acme/*, 20/s on new-nonce;
// https://letsencrypt.org/docs/rate-limits/). README states these numbers.
const (
	budgetRate  = 50 // requests per second to the CA, all orders together
	budgetBurst = 50
	nonceRate   = 10 // of which new-nonce (lego asks for nonces with HEAD, and only for them)
	nonceBurst  = 10
)

// budgetTransport waits for the budget before each request. A request
// whose context ends while it waits fails with the context's error.
type budgetTransport struct {
	base  http.RoundTripper
	all   *rate.Limiter
	nonce *rate.Limiter
}

func newBudget(base http.RoundTripper) *budgetTransport {
	return &budgetTransport{base: base,
		all:   rate.NewLimiter(budgetRate, budgetBurst),
		nonce: rate.NewLimiter(nonceRate, nonceBurst)}
}

func (b *budgetTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := b.all.Wait(r.Context()); err != nil {
		return nil, err
	}
	if r.Method == http.MethodHead {
		if err := b.nonce.Wait(r.Context()); err != nil {
			return nil, err
		}
	}
	return b.base.RoundTrip(r)
}
