# edgecert image: a static binary on an empty base. It builds with no registry:
# `make image` compiles the binary on the host (CGO_ENABLED=0) and copies the
# host's CA bundle (for Let's Encrypt) next to it.
FROM scratch
COPY build/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY build/edgecert /usr/local/bin/edgecert
ENV PATH=/usr/local/bin
VOLUME ["/var/lib/edgecert"]
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 CMD ["edgecert", "health"]
ENTRYPOINT ["edgecert"]
CMD ["run"]
