module cbd.local/client

go 1.19
