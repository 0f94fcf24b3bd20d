package acme

// waiters are the renew requests of one certificate waiting for an outcome.
// A request moves with the work it waits for: first for an order to start,
// then with the order in flight, then for the proof that the new
// certificate is served. Only the Manager's loop touches them.
type waiters struct {
	toStart  []chan RenewResult // a renewal was asked for; its order has not started
	ordering []chan RenewResult // attached to the order in flight
	deploy   []chan RenewResult // waiting for the proof that deployFP is served
	deployFP string
	// noOrder: the deploy waiters asked for a renewal of a certificate that
	// was current, and got its reload retried instead of an order.
	noOrder bool
	// rollback: the deploy waiters asked for a rollback to deployFP.
	rollback bool
}

// awaitOrder adds a request that waits for the next order of the certificate.
func (w *waiters) awaitOrder(c chan RenewResult) { w.toStart = append(w.toStart, c) }

// awaitReload adds a request that waits for the proof that fp is served,
// without an order.
func (w *waiters) awaitReload(c chan RenewResult, fp string) {
	if w.deployFP != fp {
		w.deployFP, w.noOrder, w.rollback = fp, true, false
	}
	w.deploy = append(w.deploy, c)
}

// awaitRollback adds a request that waits for the proof that fp, a version
// the operator put back, is served.
func (w *waiters) awaitRollback(c chan RenewResult, fp string) {
	w.awaitReload(c, fp)
	w.rollback = true
}

// joinOrder attaches a request to the order in flight.
func (w *waiters) joinOrder(c chan RenewResult) { w.ordering = append(w.ordering, c) }

// orderStarted attaches the requests waiting for an order to the one that
// has just started.
func (w *waiters) orderStarted() {
	w.ordering = append(w.ordering, w.toStart...)
	w.toStart = nil
}

// orderFailed answers the requests attached to the order.
func (w *waiters) orderFailed(res RenewResult) {
	reply(w.ordering, res)
	w.ordering = nil
}

// orderWritten makes the order's requests wait for the proof that its
// certificate, fp, is served.
func (w *waiters) orderWritten(fp string) {
	w.deploy = append(w.deploy, w.ordering...)
	w.ordering = nil
	w.deployFP, w.noOrder, w.rollback = fp, false, false
}

// awaitsProof says whether requests wait for the deployment of fp.
func (w *waiters) awaitsProof(fp string) bool { return fp != "" && w.deployFP == fp }

// proven answers the requests waiting for a deployment.
func (w *waiters) proven(res RenewResult) {
	reply(w.deploy, res)
	w.deploy, w.deployFP, w.noOrder, w.rollback = nil, "", false, false
}

// all answers every request, whatever it waits for (shutdown).
func (w *waiters) all(res RenewResult) {
	for _, cs := range [][]chan RenewResult{w.toStart, w.ordering, w.deploy} {
		reply(cs, res)
	}
	*w = waiters{}
}

// reply sends res to each request; their channels are buffered.
func reply(cs []chan RenewResult, res RenewResult) {
	for _, c := range cs {
		c <- res
	}
}
