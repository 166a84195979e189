"""Operations: metrics, the access log and the status page. The server feeds them; they read
a running stream through ``status.LiveStream``, never the server's internals."""
