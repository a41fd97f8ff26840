FROM busybox
RUN <<EOF
echo hello from a heredoc
echo $HOME
EOF
RUN <<-'EOT' sh
	echo tabs stripped, $NOT_EXPANDED
	EOT
COPY <<EOF /etc/motd
Welcome
EOF
