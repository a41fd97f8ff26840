FROM busybox AS build
COPY a.txt /dst/
COPY --chown=1000:1000 --chmod=0640 src/*.rs lib/ /app/
COPY --from=build --link /out /out
ADD archive.tar.gz /opt/
ADD ["with space.txt", "/dest dir/"]
