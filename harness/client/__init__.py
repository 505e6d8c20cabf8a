"""Stage 5, client: what sends the requests and stamps their times.

wire (the lean HTTP/1.1 streaming client of the timed plain-HTTP path, kernel arrival stamps) ->
client (one request: SSE over wire or httpx, its timings, auth) -> workers (a round shared over
client worker processes); tokenizer (exact token counts: the server's /tokenize or a local
Hugging Face tokenizer; the workload's `Tokenizer`).
"""
