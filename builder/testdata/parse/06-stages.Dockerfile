ARG V=1
FROM busybox AS One
ARG V
RUN echo $V
FROM one AS two
COPY --from=one /x /y
FROM --platform=linux/amd64 two
