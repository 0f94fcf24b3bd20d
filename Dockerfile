# edgecert image: a Go build stage, then a static binary and a CA bundle on an
# empty (FROM scratch) base. Docker is all it needs:
#   docker compose up -d --build      the build stage is golang:1.26 from Docker Hub
#   make image                        no registry: a build stage made from this
#                                     machine's Go (e2e/images/builder.sh)
ARG GO_IMAGE=golang:1.26-bookworm

FROM ${GO_IMAGE} AS build
WORKDIR /src
# DNS_PROVIDERS=all (default): every one of lego's DNS providers, by its lego
# name, as Traefik has them (a larger image); minimal: rfc2136, exec and
# httpreq only (a server of your own, or a bridge to any API).
ARG DNS_PROVIDERS=all
# The modules first, so that a change to edgecert's code does not fetch them
# again: the module graph, then the libraries edgecert imports, compiled, so
# that a rebuild after a change to edgecert compiles edgecert only.
COPY go.mod go.sum ./
RUN go list -m all >/dev/null
RUN case "$DNS_PROVIDERS" in all) tags=dnsall dns=github.com/go-acme/lego/v4/providers/dns ;; minimal) tags= dns= ;; \
      *) echo "DNS_PROVIDERS=$DNS_PROVIDERS: want all or minimal" >&2; exit 1 ;; esac; \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -tags "$tags" github.com/docker/docker/client \
      github.com/go-acme/lego/v4/lego github.com/go-acme/lego/v4/acme/api github.com/go-acme/lego/v4/challenge/http01 \
      github.com/go-acme/lego/v4/challenge/dns01 github.com/go-acme/lego/v4/providers/dns/rfc2136 $dns \
      github.com/prometheus/client_golang/prometheus/promhttp github.com/spf13/cobra github.com/wneessen/go-mail \
      github.com/caarlos0/env/v10 golang.org/x/time/rate golang.org/x/sync/errgroup
COPY cmd ./cmd
COPY acme ./acme
COPY dockerwatch ./dockerwatch
COPY signal ./signal
ARG VERSION=dev
# Linux whatever machine builds it; static, so it runs on scratch.
RUN if [ "$DNS_PROVIDERS" = all ]; then tags=dnsall; else tags=; fi; \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -tags "$tags" \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/edgecert ./cmd/edgecert \
 && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt \
 && mkdir -p /out/dirs/var/lib/edgecert /out/dirs/etc/edgecert/certs /out/dirs/var/www/acme /out/dirs/run/edgecert

FROM scratch
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/edgecert /usr/local/bin/edgecert
# The state, certificate, webroot and control socket directories belong to
# uid 65532, so that named volumes mounted there let edgecert run unprivileged
# (user: "65532:<the Docker socket's group>"; see README). The default is root:
# it can read the socket whatever its group, and hand keys to a proxy's user
# (EDGECERT_KEY_OWNER).
COPY --from=build --chown=65532:65532 /out/dirs/ /
ENV PATH=/usr/local/bin
VOLUME ["/var/lib/edgecert"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 CMD ["edgecert", "health"]
ENTRYPOINT ["edgecert"]
CMD ["run"]
