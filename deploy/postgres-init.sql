-- The second database of the stack: Feast's SQL registry (MLflow's is POSTGRES_DB).
CREATE DATABASE feast;
