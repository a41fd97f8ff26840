FROM busybox
RUN ok
COPPY a b
