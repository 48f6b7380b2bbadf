-- Run once by the mariadb image on an empty data volume, after it created MARIADB_DATABASE and MARIADB_USER
-- (docker-compose.yml sets them from RISKCTL_MYSQL_DATABASE / RISKCTL_MYSQL_USER / RISKCTL_MYSQL_PASSWORD).
-- The image grants that user everything on its database; MySQL CDC (Debezium's binlog reader) also needs
-- these global privileges to take its snapshot and read the binlog (on MariaDB, REPLICATION CLIENT is
-- BINLOG MONITOR and REPLICATION SLAVE is REPLICATION REPLICA).
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'riskctl'@'%';
FLUSH PRIVILEGES;
