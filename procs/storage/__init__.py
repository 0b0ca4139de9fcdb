"""The storage writer process (`process`) and its adapters: PostgreSQL (`pg`), ClickHouse (`ch`),
S3 archive (`s3`), the database sink threads (`sink`) and the warm start from history (`history`)."""
