-- Run once by the mysql image on an empty data volume, after it created MYSQL_DATABASE and MYSQL_USER
-- (docker-compose.yml sets them from RISKCTL_MYSQL_DATABASE / RISKCTL_MYSQL_USER / RISKCTL_MYSQL_PASSWORD).
-- The image grants that user everything on its database; MySQL CDC (Debezium's binlog reader) also needs
-- these global privileges to take its snapshot and read the binlog.
GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'riskctl'@'%';
FLUSH PRIVILEGES;
