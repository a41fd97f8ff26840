FROM scratch
RUN echo a \
  b && \
  # a comment inside the continuation
  echo c
RUN ["/bin/echo", "exec form"]
run --network=none --mount=type=cache,target=/cache echo lower-case keyword
CMD ["serve", "--port", "80"]
CMD serve --port 80
ENTRYPOINT ["/app"]
ENTRYPOINT /app --flag
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=5s --retries=3 CMD wget -q -O- http://localhost/ || exit 1
HEALTHCHECK NONE
ONBUILD RUN echo triggered
