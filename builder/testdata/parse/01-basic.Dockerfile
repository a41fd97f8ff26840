# syntax=docker/dockerfile:1
# A comment before the first instruction.
ARG BASE=busybox
ARG TAG

from ${BASE}:${TAG:-latest} AS base
ENV A=1 B="x y" C=z\ w
ENV LEGACY value with spaces
LABEL org.opencontainers.image.title="demo app" version=1
WORKDIR /app
USER 1000:1000
EXPOSE 80/tcp 53/udp
VOLUME ["/data", "/cache"]
VOLUME /logs
STOPSIGNAL SIGINT
MAINTAINER someone@example.com
